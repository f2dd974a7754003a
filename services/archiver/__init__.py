"""The archiver: raw FITS files into the Data Backbone (see ingest), watch mode, catch-up archiving."""
