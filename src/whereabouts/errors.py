"""Every error the plugin raises, each with the CNI error code it is reported under.

    WhereaboutsError (code 100, the plugin's own catch-all)
    ├── IncompatibleVersion      1   cniVersion we do not speak, or a verb the version lacks
    ├── InvalidEnvironment       4   a required CNI_* variable missing or malformed, bad CNI_ARGS
    ├── UndecodableConfig        6   stdin is not a JSON object
    ├── InvalidConfig            7   a key with a bad value (the message names key and value)
    ├── TryAgainLater           11   store unreachable, busy, or retries exhausted
    ├── StatusUnavailable       50   STATUS: ADD cannot be served now
    ├── RangeExhausted         101   no free address left in a range
    ├── AddressTaken           102   a requested address is held by another attachment
    ├── AddressOutsideRanges   103   a requested address lies in no configured range
    └── AttachmentNotFound     104   CHECK: an address the attachment held is gone

Expected outcomes inside the allocator (an address is taken, a commit lost its race) are return values,
not exceptions; these errors end the CNI call.
"""

from __future__ import annotations


def shown(value: object) -> str:
    """`repr(value)` for an error message, bounded in depth and length: configs are untrusted, and repr()
    itself fails on a value nested a thousand deep or an int of 5,000 digits, and a megabyte string would
    swamp the message. Short values read as repr() shows them."""
    import reprlib  # the error path only

    bounded = reprlib.Repr()
    bounded.maxlevel, bounded.maxstring, bounded.maxother, bounded.maxlong = 3, 120, 120, 40
    bounded.maxlist = bounded.maxtuple = bounded.maxdict = bounded.maxset = 10
    try:
        return bounded.repr(value)
    except (ValueError, RecursionError):
        return f"<{type(value).__name__}>"


class WhereaboutsError(Exception):
    code = 100

    def __init__(self, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.msg = msg
        self.details = details

    def to_cni(self, cni_version: str) -> dict[str, object]:
        error: dict[str, object] = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            error["details"] = self.details
        return error


class IncompatibleVersion(WhereaboutsError):
    code = 1


class InvalidEnvironment(WhereaboutsError):
    code = 4


class UndecodableConfig(WhereaboutsError):
    code = 6


class InvalidConfig(WhereaboutsError):
    code = 7


class TryAgainLater(WhereaboutsError):
    code = 11


class StatusUnavailable(WhereaboutsError):
    code = 50


class RangeExhausted(WhereaboutsError):
    code = 101


class AddressTaken(WhereaboutsError):
    code = 102


class AddressOutsideRanges(WhereaboutsError):
    code = 103


class AttachmentNotFound(WhereaboutsError):
    code = 104
