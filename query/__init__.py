"""The distributed query engine (Qserv-like) and its ADQL / SQL / Qserv-dialect front ends."""
