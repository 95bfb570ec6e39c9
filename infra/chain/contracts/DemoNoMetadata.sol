// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @notice A bare token contract with owners and Transfer events but no tokenURI, no uri
/// and no ERC-165: what a pre-ERC-721 collection (CryptoPunks' market) looks like.
contract DemoNoMetadata {
    event Transfer(address indexed from, address indexed to, uint256 indexed tokenId);

    mapping(uint256 => address) public ownerOf;
    uint256 public totalSupply;

    function mint(address to, uint256 count) external {
        for (uint256 i = 0; i < count; ++i) {
            ownerOf[totalSupply + i] = to;
            emit Transfer(address(0), to, totalSupply + i);
        }
        totalSupply += count;
    }
}
