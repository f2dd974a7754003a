"""Quality control: metrics, verify-style thresholds, measurements and the alarms they raise.

Productions insert measurements (here, or with plain SQL into ``dms.qc_measurement``); the trigger of
``udfs/control/30_qc.sql`` evaluates each one in the inserting transaction. This module validates what
people type (units with astropy, operators, levels) so mistakes are reported before they reach a table.
"""
