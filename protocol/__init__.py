"""fabnode's pure core: formats and rules, with no I/O, clock or randomness of its own.

Everything here is plain functions and values over bytes, so it can be tested exhaustively and
reused by the network, the sneakernet and the HTTP gateway alike.
"""
