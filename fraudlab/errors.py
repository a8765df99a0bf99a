"""Every error a user can cause, each with one clear message.

Lower libraries' errors are re-raised as one of these at the edge, so the CLI can
print one line and exit non-zero instead of showing a traceback.
"""


class FraudlabError(Exception):
    """Base of every user-facing error. The message is what the user sees."""

    exit_code = 2


class ConfigError(FraudlabError):
    """A setting, config file or environment variable holds a bad value."""


class DataValidationError(FraudlabError):
    """A data file does not match the documented schema."""


class FeatureServiceNotFound(FraudlabError):
    """A feature service name that the Feast repository does not define."""


class MissingInput(FraudlabError):
    """A step ran before the step that produces its input (e.g. train before build)."""


class ServiceUnavailable(FraudlabError):
    """A required external service (PostgreSQL, Redis, MLflow server) cannot be reached."""


class ModelUnavailable(FraudlabError):
    """No champion model is loaded (the API answers 503 until one is)."""


class PaymentRefused(FraudlabError):
    """A payment the API will not score as sent (a 422 naming the field)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
