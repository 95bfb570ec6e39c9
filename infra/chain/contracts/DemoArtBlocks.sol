// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ERC721} from "@openzeppelin/contracts/token/ERC721/ERC721.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";

/// @notice An Art Blocks-shaped collection: project p's tokens are p * 1,000,000 + n,
/// not enumerable, so neither 0 nor 1 is a token and totalSupply spans every project.
contract DemoArtBlocks is ERC721, Ownable {
    string private _base;
    uint256 private _minted;
    mapping(uint256 => uint256) private _invocations;

    constructor(string memory name_, string memory symbol_, string memory baseURI_)
        ERC721(name_, symbol_)
        Ownable(msg.sender)
    {
        _base = baseURI_;
    }

    /// @notice Mints the next `count` tokens of `project` to `to`.
    function mintProject(address to, uint256 project, uint256 count) external onlyOwner {
        uint256 next = project * 1_000_000 + _invocations[project];
        for (uint256 i = 0; i < count; ++i) {
            _mint(to, next + i);
        }
        _invocations[project] += count;
        _minted += count;
    }

    function totalSupply() external view returns (uint256) {
        return _minted;
    }

    function _baseURI() internal view override returns (string memory) {
        return _base;
    }
}
