"""People: profiles, their identities and stitching, and the reads other apps make of them."""
