"""The Plan: everything a run will do, decided before anything starts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from loadorch.curve import RateCurve


@dataclass(frozen=True)
class InjectorPlan:
    """One injector: a Gatling JVM that injects its *shard* (share) of a region's curve."""

    id: str
    region: str
    index: int
    curve: RateCurve

    @property
    def planned_users(self) -> float:
        return self.curve.total_users


@dataclass(frozen=True)
class RegionPlan:
    name: str
    weight: float
    share: float
    curve: RateCurve
    injectors: tuple[InjectorPlan, ...]


@dataclass(frozen=True)
class Plan:
    """A deterministic run plan: the same profile and options give the same Plan."""

    run_id: str
    profile_name: str
    profile_digest: str
    provider: str
    base_url: str
    start_at_ms: int
    curve: RateCurve
    requests_per_user: int
    regions: tuple[RegionPlan, ...]

    @property
    def injectors(self) -> tuple[InjectorPlan, ...]:
        return tuple(i for r in self.regions for i in r.injectors)

    @property
    def duration_s(self) -> float:
        return self.curve.duration_s

    @property
    def peak_rate(self) -> float:
        return self.curve.peak_rate

    @property
    def planned_users(self) -> float:
        return self.curve.total_users

    @property
    def planned_requests(self) -> float:
        return self.curve.total_users * self.requests_per_user

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "profile": self.profile_name,
            "profile_digest": self.profile_digest,
            "provider": self.provider,
            "base_url": self.base_url,
            "start_at_ms": self.start_at_ms,
            "duration_s": self.duration_s,
            "peak_rate_per_s": round(self.peak_rate, 3),
            "planned_users": round(self.planned_users, 3),
            "planned_requests": round(self.planned_requests, 3),
            "requests_per_user": self.requests_per_user,
            "curve": [list(p) for p in self.curve.points],
            "regions": [
                {
                    "name": r.name,
                    "weight": r.weight,
                    "share": round(r.share, 6),
                    "peak_rate_per_s": round(r.curve.peak_rate, 3),
                    "planned_users": round(r.curve.total_users, 3),
                    "injectors": [
                        {
                            "id": i.id,
                            "index": i.index,
                            "peak_rate_per_s": round(i.curve.peak_rate, 3),
                            "planned_users": round(i.planned_users, 3),
                            "curve": [list(p) for p in i.curve.points],
                        }
                        for i in r.injectors
                    ],
                }
                for r in self.regions
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        regions = []
        for r in data["regions"]:
            injectors = tuple(
                InjectorPlan(i["id"], r["name"], i["index"], RateCurve.from_points(i["curve"]))
                for i in r["injectors"]
            )
            region_curve = RateCurve.from_points([(t, rate * r["share"]) for t, rate in data["curve"]])
            regions.append(RegionPlan(r["name"], r["weight"], r["share"], region_curve, injectors))
        return cls(
            run_id=data["run_id"],
            profile_name=data["profile"],
            profile_digest=data["profile_digest"],
            provider=data["provider"],
            base_url=data["base_url"],
            start_at_ms=data["start_at_ms"],
            curve=RateCurve.from_points(data["curve"]),
            requests_per_user=data["requests_per_user"],
            regions=tuple(regions),
        )
