"""The Data Release Production: raws and master calibrations from the Data Backbone through ISR, calibrated
exposures (astrometry and photometry against Gaia read from the partitioned catalog), single-visit Source
catalogs, coadds per sky patch, Object, forced photometry and Visit/CcdVisit rows, loaded into the
partitioned catalog as one release (`production` builds the batch DAG, `release` loads it)."""
