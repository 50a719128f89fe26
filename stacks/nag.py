"""cdk-nag 3 acknowledgements: on the specific construct, always with a reason."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Validations
from constructs import IConstruct


def acknowledge(construct: IConstruct, *, id: str, reason: str) -> None:
    Validations.of(construct).acknowledge(Acknowledgment(id=id, reason=reason))
