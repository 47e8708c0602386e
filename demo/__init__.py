"""The demo shop: world data, simulation, seed, live traffic and the shop page. It sits on top of the
apps and no app imports it."""
