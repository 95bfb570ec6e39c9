// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ERC721} from "@openzeppelin/contracts/token/ERC721/ERC721.sol";
import {ERC721Enumerable} from "@openzeppelin/contracts/token/ERC721/extensions/ERC721Enumerable.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";

/// @notice A demo enumerable collection with arbitrary ids and burns, so pipelines see
/// id spans that totalSupply undercounts or that start far from 0 and 1.
contract DemoEnumerable is ERC721Enumerable, Ownable {
    string private _base;

    constructor(string memory name_, string memory symbol_, string memory baseURI_)
        ERC721(name_, symbol_)
        Ownable(msg.sender)
    {
        _base = baseURI_;
    }

    /// @notice Mints exactly the given ids to `to`.
    function mintIds(address to, uint256[] calldata ids) external onlyOwner {
        for (uint256 i = 0; i < ids.length; ++i) {
            _mint(to, ids[i]);
        }
    }

    function burn(uint256 id) external onlyOwner {
        _burn(id);
    }

    function _baseURI() internal view override returns (string memory) {
        return _base;
    }
}
