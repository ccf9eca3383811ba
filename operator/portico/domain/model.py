"""Base model for everything that mirrors the JobTrigger resource.

Fields are snake_case in Python and camelCase on the wire (the Kubernetes convention), and unknown
fields are rejected: the API server would prune them silently, so a typo must fail loudly here.
"""

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class SpecModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )

    def to_resource(self) -> dict[str, object]:
        """The camelCase JSON shape, as it appears in a manifest."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)
