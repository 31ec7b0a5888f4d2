"""The email addresses a request names: pydantic's EmailStr, with the common case made cheap.

EmailStr runs email-validator on every address, about a tenth of a millisecond each: with a
candidate and recruiters per request, the largest share of validating a request body. Nearly
every address is plain ASCII (a dot-atom local part at a public DNS name); such an address is
checked here by one regular expression and the limits email-validator applies, and gets the
same normalized form (the domain in lower case). Everything else (non-ASCII, quoted local parts,
`Name <address>`, special-use domains, anything invalid) goes to EmailStr's own validation, so
what is accepted, what is refused and the error messages stay EmailStr's.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, WithJsonSchema
from pydantic.networks import validate_email

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
# A top-level label that starts and ends with a letter, as email-validator requires.
_TLD = r"[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z])?"
_PLAIN = re.compile(rf"({_ATEXT}+(?:\.{_ATEXT}+)*)@((?:{_LABEL}\.)+{_TLD})")
# Refused by email-validator as not globally deliverable: left to it for its message.
_SPECIAL_USE = frozenset({"arpa", "invalid", "local", "localhost", "onion", "test"})


def normalized_email(value: str) -> str:
    """The address in EmailStr's normalized form, or EmailStr's validation error."""
    match = _PLAIN.fullmatch(value)
    if match is not None:
        local, domain = match.groups()
        if (
            len(local) <= 64
            and len(value) <= 254
            and "--" not in domain  # punycode (xn--) and its relatives: email-validator's
            and domain.rsplit(".", 1)[1].lower() not in _SPECIAL_USE
        ):
            return f"{local}@{domain.lower()}"
    return validate_email(value)[1]


EmailAddress = Annotated[
    str,
    AfterValidator(normalized_email),
    WithJsonSchema({"type": "string", "format": "email"}),
]
