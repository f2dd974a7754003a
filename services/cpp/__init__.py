"""The Calibration Products Production: master bias, dark and flat per detector (and filter) from raw
calibration frames, as registered tasks the batch service runs, and the calibration registry that chooses a
master by data ID and observation time (`combine`, `tasks`, `registry`)."""
