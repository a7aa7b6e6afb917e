"""Errors a user can fix. The CLI prints their message (no traceback) and exits 1.

Kept free of heavy imports so that `iwsft validate` answers without loading torch.
"""


class UserError(Exception):
    """Base class: bad data, a stale artifact, a wrong setting, a missing file or server."""


class DataError(UserError):
    """A problem in a user's data; str() is the whole message (file, line or id, field)."""


class EmptyCurationError(DataError, ValueError):
    """Curation left nothing to train on; the message names the rule that removed the last records."""


class ReferenceMismatchError(UserError, ValueError):
    """The stored reference column does not belong to this data, model or tokenizer."""


class SequenceAlignmentError(UserError, ValueError):
    """A per-token column does not line up with the tokenized completion."""
