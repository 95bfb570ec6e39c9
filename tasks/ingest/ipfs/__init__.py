"""IPFS content addressing done locally: CIDs, UnixFS as kubo builds it, CAR files.

We verify every byte a gateway sends against the CID the token names, so the
pipeline never has to trust a gateway; and we build the demo's content with the
same CIDs ``ipfs add`` would print.
"""
