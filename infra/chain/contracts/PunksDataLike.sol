// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Strings} from "@openzeppelin/contracts/utils/Strings.sol";

/// @notice The read interface of CryptoPunksData: each punk's SVG (a data: URI of 1x1
/// rects on a 24x24 canvas, in the real contract's format) and attribute string ("Male 2,
/// Earring, Pipe"), computed from the index alone, so 10,000 punks need no storage.
/// Stateless, so its runtime code works where a test puts it (anvil_setCode).
contract PunksDataLike {
    uint256 private constant SUPPLY = 10000;
    uint256 private constant RECTS = 12;
    bytes16 private constant HEX = "0123456789abcdef";

    function punkImageSvg(uint16 index) external pure returns (string memory) {
        require(index < SUPPLY, "punk index out of range");
        bytes memory svg = abi.encodePacked(
            'data:image/svg+xml;utf8,<svg xmlns="http://www.w3.org/2000/svg" version="1.2" ',
            'viewBox="0 0 24 24">'
        );
        for (uint256 j = 0; j < RECTS; ++j) {
            uint256 x = (uint256(index) + 3 * j) % 24;
            uint256 y = (uint256(index) / 24 + 5 * j) % 24;
            svg = abi.encodePacked(
                svg,
                '<rect x="', Strings.toString(x), '" y="', Strings.toString(y),
                '" width="1" height="1" shape-rendering="crispEdges" fill="#',
                _colour(uint256(keccak256(abi.encode(index, j)))), 'ff"/>'
            );
        }
        return string(abi.encodePacked(svg, "</svg>"));
    }

    /// @notice Type (one punk in 100 each an Alien, an Ape, a Zombie; else Male or Female
    /// with a skin tone 1-4), then 0-3 accessories.
    function punkAttributes(uint16 index) external pure returns (string memory) {
        require(index < SUPPLY, "punk index out of range");
        uint256 i = index;
        uint256 k = i % 100;
        bytes memory out;
        if (k == 99) out = "Alien";
        else if (k == 98) out = "Ape";
        else if (k == 97) out = "Zombie";
        else out = abi.encodePacked(k % 2 == 0 ? "Male " : "Female ", Strings.toString(1 + (i / 2) % 4));
        string[8] memory accessories = [
            string("Earring"), "Mohawk Dark", "Cap Forward", "Pipe",
            "Wild Hair", "Green Eye Shadow", "3D Glasses", "Hoodie"
        ];
        for (uint256 j = 0; j < i % 4; ++j) {
            out = abi.encodePacked(out, ", ", accessories[(i * 7 + j * 3) % 8]);
        }
        return string(out);
    }

    /// @dev The low 24 bits as six lowercase hex digits.
    function _colour(uint256 value) private pure returns (bytes memory out) {
        out = new bytes(6);
        for (uint256 d = 0; d < 6; ++d) {
            out[5 - d] = HEX[(value >> (4 * d)) & 0xf];
        }
    }
}
