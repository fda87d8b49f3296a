"""The mathematics of DAAM, written once and independent of any architecture."""
