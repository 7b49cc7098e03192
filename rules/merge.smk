rule merge:
    input:
        base=base_dir(),
        experts=lambda wc: expert_taskvecs(wc.combo, wc.rep),
        # a frontier point of a method with several sets: the set chosen on validation
        recipe=lambda wc: (
            front_recipe(wc.method, wc.combo, wc.rep)
            if wc.hp.startswith(FRONT_VARIANT)
            else []
        ),
    output:
        model=merged_model(f"{RESULTS}/models/{{rep}}merge/{{method}}/{{combo}}/{{hp}}"),
        records=directory(f"{RESULTS}/records/{{rep}}merge/{{method}}/{{combo}}/{{hp}}"),
    log:
        f"{RESULTS}/logs/{{rep}}merge/{{method}}/{{combo}}/{{hp}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{rep}}merge/{{method}}/{{combo}}/{{hp}}.tsv"
    conda:
        RESM_ENV
    threads: res("merge", "threads", 1)
    resources:
        mem_mb=mem("merge", 4000),
        runtime=res("merge", "runtime", 60),
        disk_mb=res("merge", "disk_mb", 2000),
        gpu=res("merge", "gpu", 0),
        gpu_model=gpu_model("merge"),
    params:
        hp=lambda wc: merge_hyperparameters(wc.method, wc.combo, wc.hp),
        args=lambda wc: merge_args(wc.method, wc.combo, wc.hp, wc.rep),
        recipe=lambda wc, input: shlex.join(input.recipe),
        code=code("merge"),
    shell:
        "resm -q merge {params.recipe} --method {wildcards.method:q} --base {input.base:q} --experts {input.experts:q} "
        "{params.args} --records {output.records:q} --out {output.model:q} > {log:q} 2>&1"


# A frontier traced by a method with several hyperparameter sets: the set with the best validation balance over
# the combo's dims (as the report's selection chooses), written as a merge recipe its points start from.
rule choose_front_hyperparameters:
    input:
        summaries=lambda wc: [
            f"{RESULTS}/eval/{arm}/summary.json"
            for arm in front_candidates(wc.method, wc.combo, wc.rep)
        ],
    output:
        f"{RESULTS}/frontier/{{rep}}{{method}}/{{combo}}/recipe.yaml",
    log:
        f"{RESULTS}/logs/frontier/{{rep}}{{method}}/{{combo}}.log",
    conda:
        RESM_ENV
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        candidates=lambda wc: json.dumps(front_candidates(wc.method, wc.combo, wc.rep)),
        # RESULTS, from the output's path (the linter's rule: no hard-coded prefix of an output)
        results=lambda wc, output: output[0]
        .removesuffix(f"frontier/{wc.rep}{wc.method}/{wc.combo}/recipe.yaml")
        .rstrip("/"),
        code=code("choose"),
    shell:
        "resm -q frontier choose --results {params.results:q} --method {wildcards.method:q} --combo {wildcards.combo:q} "
        "--candidates {params.candidates:q} --out {output:q} > {log:q} 2>&1"
