"""Level 2 quality control: metrics of a data release computed from its catalog tables (`level2`), the
computations themselves as pure numpy/astropy functions (`metrics`), and the verify-style specifications
they are checked against (`level2_specs.yaml`)."""
