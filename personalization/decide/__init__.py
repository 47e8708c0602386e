"""The decide runtime: snapshot compile and publish, the pure engine, hashing, the unit hash and the
Redis wire of the one round trip per request."""
