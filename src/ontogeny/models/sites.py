"""Named hook sites: the points of an ensemble model's forward pass that analyses read or edit by name.

In the spirit of TransformerLens's HookPoint: every model declares its sites (`Site`, with the axes of the tensor
that passes through, e.g. `[member, batch, position, feature]`), and components, Fourier measures, SAEs and probes
ask for sites by name, never for a model's class. A site is the identity until a hook is attached, and hooks are
attached only for the length of a `with model.hooks({...}):` block, so none stays behind. While hooks are attached
a model computes every site at every position (a transformer on a classification task then runs its last layer at
every position, not only at the one it reads), so a site's tensor has the same shape whichever other sites are
hooked; `every_position=False` keeps the training path's shapes instead (faster where only the read position
matters, as for components).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from torch import Tensor, nn

Hook = Callable[[Tensor], Tensor | None]  # returns the replacement, or None to leave the tensor as it is


class Site:
    """One named point of the forward pass: `axes` name the tensor's axes (member first, feature last)."""

    __slots__ = ("name", "axes", "layer", "hook")

    def __init__(self, name: str, axes: tuple[str, ...], layer: int):
        self.name, self.axes, self.layer, self.hook = name, axes, layer, None

    def __call__(self, x: Tensor) -> Tensor:
        if self.hook is None:
            return x
        out = self.hook(x)
        return x if out is None else out

    @property
    def active(self) -> bool:
        return self.hook is not None

    @property
    def has_positions(self) -> bool:
        return "position" in self.axes


class _Stop(Exception):
    """Raised by a reading hook once every site asked for is read: the rest of the forward pass is not needed."""


class HookedEnsemble(nn.Module):
    """Base of the ensemble models: their sites by name, and hooks attached for the length of a block.

    A model calls `_declare_sites(...)` in its constructor and passes each tensor through its site in `forward`.
    """

    default_site: str = ""  # the site an SAE reads unless told otherwise

    def member_module(self, index: int) -> nn.Module:
        """Member `index` alone as a plain PyTorch model with the same outputs (see models/plain.py)."""
        raise NotImplementedError(f"{type(self).__name__} does not say how to take one member out (member_module)")

    def _member_index(self, index: int) -> int:
        if not 0 <= index < self.n_members:
            raise IndexError(f"member index {index} is outside the ensemble's {self.n_members} members")
        return index

    def _declare_sites(self, sites: list[Site], aliases: dict[str, str],
                       transcoders: dict[str, tuple[str, str]]) -> None:
        """`aliases`: {short name: site}; `transcoders`: {an MLP's site: (its input site, its output site)}."""
        self._sites = {site.name: site for site in sites}
        self.aliases, self.transcoders = aliases, transcoders
        self._hooked, self._every_position = 0, False

    @property
    def hooked(self) -> bool:
        """Whether any hook is attached."""
        return self._hooked > 0

    @property
    def every_position(self) -> bool:
        """Whether the forward pass must compute every site at every position (hooks attached that ask for it)."""
        return self._every_position

    def site_names(self) -> list[str]:
        """Every site in forward order, then the aliases."""
        return [*self._sites, *self.aliases]

    def site(self, name: str) -> Site:
        """The site `name` (or alias); ValueError (one line) naming the sites there are."""
        site = self._sites.get(self.aliases.get(name, name))
        if site is None:
            raise ValueError(f"unknown site {name!r} for this {type(self).__name__}; its sites: "
                             f"{', '.join(self.site_names())}")
        return site

    def sites(self) -> Iterator[Site]:
        return iter(self._sites.values())

    @contextmanager
    def hooks(self, hooks: dict[str, Hook], *, every_position: bool = True):
        """Attach `hooks` ({site: fn}) for the block: fn(tensor) reads the tensor passing through and returns its
        replacement, or None to leave it; the sites are restored however the block ends."""
        sites = [self.site(name) for name in hooks]
        if len({site.name for site in sites}) < len(sites):
            raise ValueError(f"two hooks on one site: {sorted(hooks)}")
        before = [site.hook for site in sites], self._every_position
        for site, hook in zip(sites, hooks.values()):
            site.hook = hook
        self._hooked += 1
        self._every_position = every_position
        try:
            yield self
        finally:
            self._hooked -= 1
            self._every_position = before[1]
            for site, hook in zip(sites, before[0]):
                site.hook = hook

    def run_with_hooks(self, x: Tensor, hooks: dict[str, Hook], *, every_position: bool = True) -> Tensor:
        """The model's output on x with `hooks` attached for this one pass."""
        with self.hooks(hooks, every_position=every_position):
            return self(x)

    def read(self, x: Tensor, names: list[str], *, logits: bool = False, every_position: bool = True
             ) -> dict[str, Tensor]:
        """{name: the tensor at that site} for one pass on x; the pass stops once they are read, unless `logits`
        (then the output is under "logits")."""
        got: dict[str, Tensor] = {}

        def reader(name):
            def hook(value):
                got[name] = value
                if not logits and len(got) == len(names):
                    raise _Stop
            return hook

        try:
            out = self.run_with_hooks(x, {name: reader(name) for name in names}, every_position=every_position)
        except _Stop:
            return got
        if logits:
            got["logits"] = out
        return got

    # ---- what some analyses need besides sites; a model that lacks one is skipped by them ----

    def readout_units(self) -> tuple[str, str, Tensor | None] | None:
        """The units next to the output, for unit importance and selectivity: (site, kind of unit, readout) where
        readout [M, width, outputs] maps the site's activations linearly to the logits read (logits = h @ readout +
        a constant), or None where the path is not linear; None without such units."""
        return None

    def token_tables(self) -> Tensor | None:
        """Token embedding tables [M, T, V, d] (one per input position, or T = 1 shared), or None."""
        return None

    embedding_is_neurons = False  # whether an embedding's d columns are hidden neurons (an MLP's first layer)

    def floats_per_example(self, x: Tensor) -> int:
        """About how many floats one example's widest site holds for all members (to size chunks)."""
        return 4096 * (x.shape[1] if x.dim() > 1 else 1)
