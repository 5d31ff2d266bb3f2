"""Every table and column name of a run, in one place, as pyarrow schemas.

Streamed tables (`scalars`, `examples`, `checkpoints`) grow during training as Parquet shards; `members` and
`subsets` are put whole by each writer (readers see the union); analysis tables are single files at the top.
"""

from __future__ import annotations

import pyarrow as pa

# Parquet keeps repeated strings as a dictionary anyway; holding them so in memory makes appends cheap.
_CATEGORY = pa.dictionary(pa.int32(), pa.string())

SCALARS = pa.schema([
    ("member", pa.int32()),
    ("step", pa.int64()),
    ("name", _CATEGORY),
    ("value", pa.float64()),
])

EXAMPLES = pa.schema([
    ("member", pa.int32()),
    ("step", pa.int64()),
    ("split", _CATEGORY),
    ("example", pa.int64()),
    ("loss", pa.float32()),
    ("correct", pa.bool_()),
])

CHECKPOINTS = pa.schema([
    ("member", pa.int32()),
    ("step", pa.int64()),
    ("path", pa.string()),  # relative to the run directory
    ("sha256", pa.string()),
])

SUBSETS = pa.schema([
    ("split", pa.string()),
    ("example", pa.int64()),
    ("subset", pa.string()),
])

# Per-token probes: which token each example (a sequence and a position in it) is.
TOKENS = pa.schema([
    ("split", pa.string()),
    ("example", pa.int64()),
    ("sequence", pa.int64()),
    ("position", pa.int32()),
    ("token", pa.int64()),
    ("text", pa.string()),
])

# Checkpoint suites: one row per ingested revision of a member, with hashes to catch mislabelled checkpoints.
REVISIONS = pa.schema([
    ("member", pa.int32()),
    ("step", pa.int64()),
    ("revision", pa.string()),
    ("weights_sha256", pa.string()),
    ("config_sha256", pa.string()),
])

# The members table also holds one column per hyperparameter, named by its dotted spec key ("optim.lr").
MEMBERS = pa.schema([
    ("member", pa.int32()),
    ("ensemble", pa.int32()),
    ("init_seed", pa.int64()),
    ("data_seed", pa.int64()),
    ("status", pa.string()),  # running | ok | diverged
    pa.field("diverged_step", pa.int64(), nullable=True),
])
MEMBER_STATUSES = ("running", "ok", "diverged")
# Member settings that some producers write: one type whichever producer (or rerun) wrote them, nulls included.
MEMBER_SETTINGS = {"source": pa.string(), "loss_kind": pa.string(), "chance_loss": pa.float64()}

STREAMED = {"scalars": SCALARS, "examples": EXAMPLES, "checkpoints": CHECKPOINTS}
# Whole tables that each writer puts its own version of; readers see their union.
WRITER_TABLES = {"members": MEMBERS, "subsets": SUBSETS, "tokens": TOKENS, "revisions": REVISIONS}

# Rows within a table are returned in this order.
SORT_KEYS = {
    "scalars": ("member", "step", "name"),
    "examples": ("member", "step", "split", "example"),
    "checkpoints": ("member", "step"),
    "members": ("member",),
    "subsets": ("split", "example", "subset"),
    "tokens": ("split", "example"),
    "revisions": ("member", "step"),
}


def read_schema(schema: pa.Schema) -> pa.Schema:
    """Return `schema` as readers see it: dictionary-encoded strings come back as plain strings."""
    return pa.schema([
        field.with_type(field.type.value_type) if pa.types.is_dictionary(field.type) else field
        for field in schema
    ])
