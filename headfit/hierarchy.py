"""Label hierarchies: a parent task whose labels group a child task's labels (GoEmotions' 28 emotions into
Ekman's 6 + neutral), and decisions that agree across the levels.

`Hierarchy(child, parent, groups)` holds which child labels each parent label groups. Two decodings make the
levels agree (a predicted child label always comes with its parent label):

`decision.hierarchy=consistent` (bottom-up, `make_consistent`): the finest level decides, the coarser follow it.
- a multilabel parent: a parent label is predicted when its head predicts it or when any predicted child label
  belongs to it (decisions only ever gain labels);
- a single-label parent: the group of the child's most probable predicted label wins (among several groups holding
  that child: the one the parent's head scores highest); child labels outside that group are dropped. With no
  child label predicted, the parent's own decision stands.

`decision.hierarchy=top_down` (`decide_top_down`): the coarser level decides, the finer follow it. The parent's
decisions stand as its head made them; a child label is kept only when a parent label it belongs to is decided.
- a multilabel child: its labels outside the decided groups are dropped (it may be left with none);
- a single-label child whose label is outside the decided groups takes its most probable label inside them; where
  no child label lies inside them (a multilabel parent that decided no group, or two parents whose decided groups
  share no child label), the child's own label stands and its parents follow it as under `consistent` (a
  single-label child always has a label: only such rows decode bottom-up).
A child with several parents follows all of them; a chain decodes coarsest first.
A coarse head that is more accurate than the fine one keeps its quality; the fine level loses the labels its
coarse level rules out.

Under `independent` each head decides on its own, and `inconsistent` counts the (row, child label) decisions whose
parent label is not decided: what the two consistent decodings remove.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from headfit.errors import HeadfitConfigError
from headfit.task import Task

MODES = ("consistent", "top_down", "independent")


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
        return int((child.bool() & ~self.covers(parent)).sum())

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

    def covers(self, parent: Tensor) -> Tensor:
        """(B, child labels) bool: a parent label the child label belongs to is decided; `parent` multi-hot (B, P)."""
        return (parent.float() @ self.membership.to(parent.device).T.float()) > 0


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise HeadfitConfigError(f"decision.hierarchy must be consistent, top_down or independent, got {mode!r}",
                                 where="decision.hierarchy",
                                 fix="consistent: a predicted child label brings its parent along (bottom-up); "
                                     "top_down: a child label is kept only under a decided parent label; "
                                     "independent: each head decides alone (and the report counts the disagreements)")


def decide_top_down(links: Sequence[Hierarchy], hot: Mapping[str, Tensor], probabilities: Mapping[str, Tensor],
                    single_label: Mapping[str, bool]) -> dict[str, Tensor]:
    """Multi-hot decisions {task: (B, C)} made to follow the parents (top_down, this module's docstring); `links`
    finest first, as `ClassifierModule.hierarchies` holds them. No data-dependent branch: the ONNX export traces it."""
    hot = dict(hot)
    for child in dict.fromkeys(link.child for link in reversed(links)):  # coarsest first
        mine = [link for link in links if link.child == child]
        covered = torch.stack([link.covers(hot[link.parent]) for link in mine]).all(0)
        if not single_label[child]:
            hot[child] = hot[child] & covered
            continue
        inside = covered.any(1, keepdim=True)
        best = torch.nn.functional.one_hot(probabilities[child].masked_fill(~covered, -1.0).argmax(1),
                                           covered.shape[1]).bool()
        moves = inside & ~(hot[child] & covered).any(1, keepdim=True)
        # `a & b | ~a & c` rather than torch.where: onnxruntime has no Where for bool tensors
        hot[child] = moves & best | ~moves & hot[child]
        for link in mine:  # rows with no child label inside the groups: the parents follow the child
            _, following = link.make_consistent(hot[child], hot[link.parent], probabilities[child],
                                                probabilities[link.parent], single_label[link.parent])
            hot[link.parent] = inside & hot[link.parent] | ~inside & following
    return hot
