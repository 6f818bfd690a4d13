"""Label hierarchies: a parent task whose labels group a child task's labels (GoEmotions' 28 emotions into
Ekman's 6 + neutral), and decisions that agree across the levels.

`Hierarchy(child, parent, groups)` holds which child labels each parent label groups. Under
`decision.hierarchy=consistent` the finest level decides and the coarser ones follow it (bottom-up):
- a multilabel parent: a parent label is predicted when its head predicts it or when any predicted child label
  belongs to it (decisions only ever gain labels);
- a single-label parent: the group of the child's most probable predicted label wins (among several groups holding
  that child: the one the parent's head scores highest); child labels outside that group are dropped. With no
  child label predicted, the parent's own decision stands.
Under `independent` each head decides on its own, and `inconsistent` counts the (row, child label) decisions whose
parent label is not decided: what consistent decoding removes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from headfit.errors import HeadfitConfigError
from headfit.task import Task

MODES = ("consistent", "independent")


@dataclass(frozen=True)
class Hierarchy:
    child: str
    parent: str
    membership: Tensor  # (child labels, parent labels) bool: child label i belongs to parent label j

    @classmethod
    def from_groups(cls, child: str, child_task: Task, parent: str, parent_task: Task,
                    groups: Mapping[str, Sequence[str]]) -> Hierarchy:
        """`groups`: {parent label: [child labels]}, every child label in at least one group."""
        membership = torch.zeros(child_task.num_labels, parent_task.num_labels, dtype=torch.bool)
        for parent_label, members in groups.items():
            for member in members:
                if str(parent_label) not in parent_task.labels or str(member) not in child_task.labels:
                    unknown = parent_label if str(parent_label) not in parent_task.labels else member
                    raise HeadfitConfigError(
                        f"the groups of task {parent!r} name {unknown!r}, which is not a label of "
                        f"{parent!r} {list(parent_task.labels)} / {child!r} {list(child_task.labels)[:10]}",
                        where=f"tasks.{parent}.groups", fix="name each parent label and its child labels exactly")
                membership[child_task.labels.index(str(member)), parent_task.labels.index(str(parent_label))] = True
        orphans = [child_task.labels[i] for i in (~membership.any(1)).nonzero().flatten().tolist()]
        if orphans:
            raise HeadfitConfigError(f"child labels {orphans} of task {child!r} belong to no label of {parent!r}",
                                     where=f"tasks.{parent}.groups",
                                     fix="put each child label in a group (or name a parent label after it)")
        return cls(child, parent, membership)

    def inconsistent(self, child: Tensor, parent: Tensor) -> int:
        """How many (row, child label) decisions lack their parent label; decisions as multi-hot (B, C)."""
        membership = self.membership.to(child.device).float()
        covered = (parent.float() @ membership.T) > 0  # (B, child labels): a parent of it is decided
        return int((child.bool() & ~covered).sum())

    def make_consistent(self, child: Tensor, parent: Tensor, child_probabilities: Tensor,
                        parent_probabilities: Tensor, parent_single_label: bool) -> tuple[Tensor, Tensor]:
        """Multi-hot decisions (B, C) of both levels, made consistent by the rule in this module's docstring."""
        membership = self.membership.to(child.device)
        child, parent = child.bool(), parent.bool()
        if not parent_single_label:
            return child, parent | ((child.float() @ membership.float()) > 0)
        has_child = child.any(1)
        best_child = child_probabilities.masked_fill(~child, -1.0).argmax(1)  # the most probable decided child
        candidates = membership[best_child]  # (B, parent labels): the groups holding it
        best_parent = parent_probabilities.masked_fill(~candidates, -1.0).argmax(1)
        decided_parent = torch.where(has_child, best_parent, parent.float().argmax(1))
        parent = torch.nn.functional.one_hot(decided_parent, parent.shape[1]).bool()
        child = child & membership[:, decided_parent].T  # drop child labels outside the winning group
        return child, parent


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise HeadfitConfigError(f"decision.hierarchy must be consistent or independent, got {mode!r}",
                                 where="decision.hierarchy",
                                 fix="consistent: a child label always comes with its parent; independent: each head "
                                     "decides alone (and the report counts the disagreements)")
