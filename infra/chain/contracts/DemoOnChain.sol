// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ERC721} from "@openzeppelin/contracts/token/ERC721/ERC721.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";

/// @notice A demo on-chain collection (Loot-like): every token's URI is a stored string,
/// typically a long `data:application/json;base64,...`, returned exactly as minted.
contract DemoOnChain is ERC721, Ownable {
    mapping(uint256 => string) private _uris;
    uint256 private _minted;

    constructor(string memory name_, string memory symbol_)
        ERC721(name_, symbol_)
        Ownable(msg.sender)
    {}

    /// @notice Mints ids firstId .. firstId + uris.length - 1 to `to`, each with its URI.
    function mintWithURIs(address to, uint256 firstId, string[] calldata uris) external onlyOwner {
        for (uint256 i = 0; i < uris.length; ++i) {
            _mint(to, firstId + i);
            _uris[firstId + i] = uris[i];
        }
        _minted += uris.length;
    }

    function totalSupply() external view returns (uint256) {
        return _minted;
    }

    function tokenURI(uint256 tokenId) public view override returns (string memory) {
        _requireOwned(tokenId);
        return _uris[tokenId];
    }
}
