"""The top layer: the `ncc` command line, the compile-and-verify driver and the demo.

It may import every other package of ncc; nothing imports it.
"""
