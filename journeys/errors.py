"""One root exception for the whole product; HTTP status codes are mapped only in api/."""


class JourneysError(Exception):
    """Root of every error the product raises on purpose."""


class ConfigError(JourneysError):
    """Settings or the journey-definitions file are invalid."""


class DefinitionNotFound(JourneysError):
    """A journey definition name that is not loaded."""


class InvalidQuery(JourneysError):
    """A report request that cannot be answered as asked (bad filter, breakdown, range)."""


class NotFound(JourneysError):
    """The thing asked for does not exist (customer, alert, ...)."""


class ServiceUnavailable(JourneysError):
    """A dependency (broker, warehouse) cannot be reached right now; retrying may help."""


class WarehouseError(JourneysError):
    """The warehouse refused or failed a statement."""


class LauncherError(JourneysError):
    """A local service (broker, ClickHouse server) could not be started."""
