# Models made elsewhere (config `experts:` of kind hub, local or lora; `mixtures.models`): fetched once on the
# node that can reach the hub, then adopted (checked against the base, pickles rewritten, LoRA merged) where a
# trained model would be.


localrules:
    fetch_model,


rule fetch_model:
    output:
        directory(f"{RESULTS}/hub/models/{{arm}}"),
    log:
        f"{RESULTS}/logs/hub/models/{{arm}}.log",
    wildcard_constraints:
        arm=one_of([a for a in OUTSIDE if hub_source(a)]),
    conda:
        RESM_ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=240,
        disk_mb=res("merge", "disk_mb", 2000),
    params:
        repo=lambda wc: hub_source(wc.arm),
        args=to_flags(ModelRequest, {"allow_pickle": PICKLE}),
        code=code("hub"),
    shell:
        "resm -q base download {params.repo:q} {params.args} --out {output:q} > {log:q} 2>&1"


rule adopt_model:
    input:
        base=base_dir(),
        source=lambda wc: adopt_source(wc.arm),
    output:
        protected(directory(f"{RESULTS}/models/{{arm}}")),
    log:
        f"{RESULTS}/logs/adopt/{{arm}}.log",
    wildcard_constraints:
        arm=one_of(OUTSIDE),
    conda:
        RESM_ENV
    threads: res("default", "threads", 1)
    resources:
        mem_mb=mem("merge", 4000),
        runtime=res("merge", "runtime", 60),
        disk_mb=res("merge", "disk_mb", 2000),
    params:
        args=to_flags(ModelRequest, {"allow_pickle": PICKLE}),
        code=code("adopt"),
    shell:
        "resm -q model adopt --source {input.source:q} --base {input.base:q} {params.args} "
        "--out {output:q} --force > {log:q} 2>&1"
