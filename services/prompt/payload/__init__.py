"""The Alert Production payload: ISR, then per detector alignment, PSF matching, subtraction, detection,
measurement and forced photometry (ProcessDetectorTask, "prompt.process_detector")."""
