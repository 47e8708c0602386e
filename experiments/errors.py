"""The one error a user's input to lift reports and metrics raises: the field, and how to fix it."""


class LiftInputError(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
