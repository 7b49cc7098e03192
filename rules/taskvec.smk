rule extract_taskvec:
    input:
        base=base_dir(),
        expert=f"{RESULTS}/models/{{rep}}expert/{{dim}}",
    output:
        directory(f"{RESULTS}/taskvec/{{rep}}{{dim}}"),
    log:
        f"{RESULTS}/logs/taskvec/{{rep}}{{dim}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/taskvec/{{rep}}{{dim}}.tsv"
    conda:
        RESM_ENV
    threads: res("merge", "threads", 1)
    resources:
        mem_mb=mem("merge", 4000),
        runtime=res("merge", "runtime", 60),
        disk_mb=res("merge", "disk_mb", 2000),
    params:
        args=to_flags(ExtractRequest, {"allow_pickle": PICKLE}),
        code=code("taskvec"),
    shell:
        "resm -q extract --base {input.base:q} --expert {input.expert:q} {params.args} --out {output:q} > {log:q} 2>&1"


rule conflicts:
    input:
        lambda wc: [f"{RESULTS}/taskvec/{d}" for d in combo_dims(wc.combo)],
    output:
        directory(f"{RESULTS}/conflicts/{{combo}}"),
    log:
        f"{RESULTS}/logs/conflicts/{{combo}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/conflicts/{{combo}}.tsv"
    conda:
        RESM_ENV
    threads: res("merge", "threads", 1)
    resources:
        mem_mb=mem("merge", 4000),
        runtime=res("merge", "runtime", 60),
    params:
        names=lambda wc: combo_dims(wc.combo),
        code=code("taskvec"),
    shell:
        "resm -q conflicts {input:q} --names {params.names:q} --out {output:q} > {log:q} 2>&1"
