"""Every exception clipsql raises on purpose. Catch :class:`ClipsqlError` for all of them."""


class ClipsqlError(Exception):
    """Base class of all clipsql errors; the message is meant for the user."""


class ConfigError(ClipsqlError):
    """A setting (DSN, model spec, device, option value) is malformed."""


class DatabaseError(ClipsqlError):
    """The database cannot be reached or refused an operation."""


class ExtensionMissingError(DatabaseError):
    """The server has no usable pgvector extension."""


class EmbeddedServerError(DatabaseError):
    """The embedded PostgreSQL could not be started, stopped or found."""


class MigrationError(DatabaseError):
    """A schema migration failed; the database is left at the previous version."""


class ModelError(ClipsqlError):
    """An OpenCLIP model could not be loaded (unknown name, missing weights, bad checkpoint)."""


class ModelMismatchError(ModelError):
    """The requested model differs from the one that embedded the collection."""


class WeightsUnavailableError(ModelError):
    """A model's weights can be neither read from the local cache nor downloaded (offline):
    ``problem`` says which and why; the message names the way out, a local checkpoint
    ``ARCH/PATH/TO/weights.bin`` given as the model; :meth:`naming` words it for a caller
    that gives the model otherwise (a command-line option)."""

    def __init__(self, problem: str, arch: str):
        self.problem, self.arch = problem, arch
        super().__init__(self.naming(f"the model {arch}/PATH/TO/weights.bin "
                                     "(CLIPSQL_MODEL, or connect(model=...))"))

    def naming(self, how: str) -> str:
        """The message with the way to give a local checkpoint said as ``how``."""
        return (f"{self.problem}: download them once where the network is reachable, or "
                f"give a local checkpoint with {how}")

    def __reduce__(self):
        return (type(self), (self.problem, self.arch))


class ReembedUnfinishedError(ModelMismatchError):
    """A reembed to another model is unfinished: ``problem`` says which and how far it got
    (``embedded`` of ``total`` rows, counted now); the message adds the library's ways on
    (``cancel=True`` first when nothing was embedded), a caller may word its own."""

    def __init__(self, problem: str, target: str, embedded: int, total: int):
        self.problem, self.target, self.embedded, self.total = problem, target, embedded, total
        super().__init__(self.naming("cancel=True", f"the model {target}"))

    def naming(self, cancel: str, again: str) -> str:
        """The message with the ways to cancel it and to finish it said as given."""
        if not self.embedded:
            return (f"{self.problem}: nothing is embedded yet, so cancel it first ({cancel}; "
                    f"nothing is lost), then reembed; or finish it with {again}")
        return (f"{self.problem}: finish it with {again} (it resumes), or cancel it first "
                f"({cancel}; its {self.embedded} new vectors are dropped)")

    def __reduce__(self):
        return (type(self), (self.problem, self.target, self.embedded, self.total))


class EmptyCollectionError(ClipsqlError):
    """The collection has no model bound yet, so there is nothing to search."""


class QueryError(ClipsqlError):
    """A search was malformed: bad WHERE fragment, unknown image, bad parameters."""


class ImageError(ClipsqlError):
    """One image could not be read; ``reason`` is a short machine-readable code."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail

    def __reduce__(self):  # raised in decoder processes, re-raised in the loader
        return (ImageError, (self.reason, self.detail))


class LoadError(ClipsqlError):
    """A load stopped for a reason that is not one file's fault (e.g. a decoder process died)."""


class LabelError(QueryError):
    """A label set or label is unknown, empty or malformed, or changed during a classify."""


class EmbeddingImportError(ClipsqlError):
    """Precomputed embeddings that cannot be imported: shape, dimension, values, keys or metadata."""


class ParameterError(EmbeddingImportError):
    """An import refused where one parameter of an importer call would change the outcome
    (:func:`clipsql.ingest.importer.read_files`): ``parameter`` names it; :meth:`naming`
    words the message for a caller that calls it otherwise (a command-line option)."""

    def __init__(self, problem: str, parameter: str, remedy: str):
        self.problem, self.parameter, self.remedy = problem, parameter, remedy
        super().__init__(self.naming(f"{parameter}=True"))

    def naming(self, name: str) -> str:
        """The message with the parameter called ``name``."""
        return f"{self.problem} ({name} {self.remedy})"

    def __reduce__(self):
        return (type(self), (self.problem, self.parameter, self.remedy))


class FilterSetupError(DatabaseError):
    """SQL filters cannot run on this server until an administrator sets up their
    least-privilege login (``reason``: what is wrong; the message also says what to run).
    A problem of the server's set-up, not of the filter: nothing of the filter ran."""

    def __init__(self, reason: str, remedy: str):
        self.reason, self.remedy = reason, remedy
        super().__init__(f"SQL filters are refused on this server: {reason}; {remedy}")

    def __reduce__(self):
        return (type(self), (self.reason, self.remedy))


class PruneRefusedError(LoadError):
    """A prune that would remove what is probably not gone (an empty or mostly emptied
    folder: a share that is not mounted): ``problem`` says what and how many rows; the
    message adds the library's way to force it, a caller may word its own."""

    def __init__(self, problem: str):
        self.problem = problem
        super().__init__(f"{problem}; if those files are really gone, prune with force=True")

    def __reduce__(self):
        return (type(self), (self.problem,))


class OcrLanguageDataError(ClipsqlError):
    """Tesseract's language data for OCR is missing or cannot be loaded; the message says
    what to install (or to set ``TESSDATA_PREFIX``)."""
