// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ERC721} from "@openzeppelin/contracts/token/ERC721/ERC721.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";

/// @notice A demo PFP collection (Moonbirds-like): tokenURI is baseURI + decimal id,
/// ids are minted consecutively from `firstId`, so pipelines see both 0- and 1-based ranges.
contract DemoPFP is ERC721, Ownable {
    string private _base;
    uint256 private immutable _firstId;
    uint256 private _minted;

    constructor(string memory name_, string memory symbol_, string memory baseURI_, uint256 firstId_)
        ERC721(name_, symbol_)
        Ownable(msg.sender)
    {
        _base = baseURI_;
        _firstId = firstId_;
    }

    /// @notice Mints the next `count` ids to `to`.
    function mintBatch(address to, uint256 count) external onlyOwner {
        uint256 next = _firstId + _minted;
        for (uint256 i = 0; i < count; ++i) {
            _mint(to, next + i);
        }
        _minted += count;
    }

    function totalSupply() external view returns (uint256) {
        return _minted;
    }

    function _baseURI() internal view override returns (string memory) {
        return _base;
    }
}
