"""The web portal of the Science Platform: pages served by `dms serve` over the VO services (see README)."""
