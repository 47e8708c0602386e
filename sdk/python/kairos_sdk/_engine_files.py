"""The repository files the SDK evaluates with: decide's engine and the pure modules it imports,
copied unchanged into the wheel (setup.py) and checked byte for byte against the repository by
tests/personalization/test_sdk.py. Paths relative to the repository root."""

ENGINE_FILES = (
    "personalization/__init__.py",
    "personalization/decide/__init__.py",
    "personalization/decide/context.py",
    "personalization/decide/engine.py",
    "personalization/decide/hashing.py",
    "personalization/decide/live.py",
    "personalization/experiences/__init__.py",
    "personalization/experiences/conditions.py",
    "personalization/intent_fields.py",
    "personalization/people/__init__.py",
    "personalization/people/journey.py",
    "personalization/people/live_session.py",
    "personalization/rkeys.py",
    "personalization/score_fields.py",
    "personalization/segment_keys.py",
)
