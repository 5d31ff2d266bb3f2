"""Test-wide settings."""

import os

# The test models are tiny: with several OpenMP threads per process, the threads' synchronization costs more than
# the work, and on a shared machine it slows the suite ~10x. One thread (inherited by the CLI subprocesses) keeps it
# fast; it changes no result the tests check.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture
def scalar_run(tmp_path):
    """`write(name, scalars, fields=None)`: a run written straight to the store (as a user's loop would) under
    tmp_path / name, holding `scalars` (member, step, name, value) and members with the setting columns of `fields`
    (a frame with a `member` column); returns its path."""
    from ontogeny.store import ShardWriter
    from ontogeny.store.create import create_run

    def write(name: str, scalars: pd.DataFrame, fields: pd.DataFrame | None = None):
        path = tmp_path / name
        create_run(path, {"kind": "synthetic"}).release()
        ids = np.sort(scalars.member.unique())
        members = pd.DataFrame({"member": ids, "ensemble": 0, "init_seed": ids, "data_seed": 0, "status": "ok",
                                "diverged_step": None})
        if fields is not None:
            members = members.merge(fields.drop(columns="config", errors="ignore"), on="member")
        with ShardWriter(path, background=False) as writer:
            writer.put("members", members)
            for (member, key), rows in scalars.groupby(["member", "name"]):
                writer.append("scalars", {"member": member, "step": rows.step.to_numpy(), "name": key,
                                          "value": rows.value.to_numpy()})
            writer.commit()
        return path

    return write


@pytest.fixture
def fill_disk(monkeypatch):
    """`fill_disk(after=N)`: from the (N+1)-th Parquet file on, every write fails as on a full disk (ENOSPC);
    `monkeypatch.undo()` frees the space again."""
    import errno

    from ontogeny.store import writer as writer_module

    real = writer_module.write_parquet

    def fill(after: int) -> None:
        written = []

        def fill_up(table, path, **options):
            written.append(path)
            if len(written) > after:
                raise OSError(errno.ENOSPC, "No space left on device")
            real(table, path, **options)

        monkeypatch.setattr(writer_module, "write_parquet", fill_up)

    return fill
