// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @notice The read interface of the CryptoPunks market contract: name, symbol,
/// totalSupply and punkIndexToAddress, with no tokenURI and no ERC-165. Stateless, so
/// its runtime code works where a test puts it (anvil_setCode runs no constructor).
contract PunksMarketLike {
    uint256 public constant totalSupply = 10000;

    function name() external pure returns (string memory) {
        return "CRYPTOPUNKS";
    }

    function symbol() external pure returns (string memory) {
        return unicode"Ͼ";
    }

    /// @notice A made-up owner per punk; the zero address past the supply, as the real mapping.
    function punkIndexToAddress(uint256 index) external pure returns (address) {
        return index < totalSupply ? address(uint160(0x10000 + index)) : address(0);
    }
}
