# Rules generated from the DVC stages.  Persistent outputs (resumable checkpoints) are left out of the
# declared outputs so that Snakemake, like DVC, does not delete them before a run.
from maggie.config.dag import is_directory_output, load_stages, resolve_inputs, resources

STAGES = load_stages(".")
GROUPS = {}
for _s in STAGES:
    GROUPS.setdefault(_s.group, []).append(_s)


def _outputs(stage):
    return [directory(o) if is_directory_output(o) else o for o in stage.outs if o not in stage.persistent]


rule all:
    input:
        [o for s in STAGES for o in s.outs if o not in s.persistent],
    default_target: True


for _group, _members in GROUPS.items():
    if len(_members) > 1 or _members[0].name != _group:
        rule:
            name:
                _group
            input:
                [o for s in _members for o in s.outs if o not in s.persistent],


for _stage in STAGES:
    _res = resources(config, _stage.group)
    rule:
        name:
            _stage.rule
        input:
            resolve_inputs(_stage, STAGES),
        output:
            _outputs(_stage),
        log:
            f"logs/{_stage.rule}.log",
        threads: _res.get("threads", 1)
        resources:
            mem_mb=_res.get("mem_mb", 4000),
            runtime=_res.get("runtime", 30),
        params:
            # Bound now: a shell directive would read _stage when the job runs (the loop's last).
            cmd=_stage.cmd,
            # The stage's params.yaml values: Snakemake's params rerun trigger then matches DVC's.
            values=_stage.params_json,
        shell:
            "OMP_NUM_THREADS={threads} {params.cmd} > {log} 2>&1"
