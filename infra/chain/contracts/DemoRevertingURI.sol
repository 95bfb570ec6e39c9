// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ERC721} from "@openzeppelin/contracts/token/ERC721/ERC721.sol";

/// @notice Tokens 1..count all exist, yet tokenURI answers for token 1 only: every other
/// id reverts with a reason of raw bytes (not UTF-8, with control characters), as a
/// broken or hostile contract may.
contract DemoRevertingURI is ERC721 {
    uint256 public totalSupply;

    constructor() ERC721("Reverting", "REV") {}

    function mint(address to, uint256 count) external {
        for (uint256 i = 1; i <= count; ++i) {
            _mint(to, totalSupply + i);
        }
        totalSupply += count;
    }

    function tokenURI(uint256 tokenId) public view override returns (string memory) {
        _requireOwned(tokenId);
        bytes memory reason = hex"fffe00071b5b324ae280ae626164";
        require(tokenId == 1, string(reason));
        return "data:application/json,{}";
    }
}
