rule merge:
    input:
        base=base_dir(),
        experts=lambda wc: expert_taskvecs(wc.combo, wc.rep),
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
        hp=lambda wc: merge_params(config, wc.method, wc.hp),
        args=lambda wc: merge_args(wc.method, wc.hp, wc.rep),
        code=code("merge"),
    shell:
        "resm -q merge --method {wildcards.method:q} --base {input.base:q} --experts {input.experts:q} "
        "{params.args} --records {output.records:q} --out {output.model:q} > {log:q} 2>&1"
