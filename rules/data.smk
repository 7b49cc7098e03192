localrules:
    fetch_dataset,


rule fetch_dataset:
    output:
        directory(fetched_dataset("{source}")),
    log:
        f"{RESULTS}/logs/hub/datasets/{{source}}.log",
    wildcard_constraints:
        source=one_of(HUB_DATA),
    conda:
        RESM_ENV
    params:
        spec=lambda wc: json.dumps(HUB_DATA[wc.source]["spec"]),
    shell:
        "resm -q data fetch {params.spec:q} --out {output:q} --force > {log:q} 2>&1"


rule build_data:
    input:
        assets=[asset_marker(name) for name in needed_assets()],
        base=base_dir(),
        hub=lambda wc: dim_hub_datasets(wc.dim),
    output:
        train=f"{RESULTS}/data/{{dim}}/train.jsonl",
        val=f"{RESULTS}/data/{{dim}}/val.jsonl",
        test=f"{RESULTS}/data/{{dim}}/test.jsonl",
    log:
        f"{RESULTS}/logs/data/{{dim}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/data/{{dim}}.tsv"
    conda:
        RESM_ENV
    threads: res("default", "threads", 1)
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        out=f"{RESULTS}/data/{{dim}}",
        sources=lambda wc: source_args(wc.dim),
        options=config_flags(BuildRequest, DATA, allow_pickle=PICKLE),
        cache=lambda wc, input: os.path.dirname(os.path.dirname(input.assets[0])),
        code=code("data"),
    shell:
        "resm -q data build --dim {wildcards.dim:q} {params.sources} {params.options} "
        "--base {input.base:q} --cache {params.cache:q} --out {params.out:q} --force > {log:q} 2>&1"


rule decontaminate_data:
    input:
        assets=[asset_marker(name) for name in needed_assets()],
        train=f"{RESULTS}/data/{{dim}}/train.jsonl",
        tests=[f"{RESULTS}/data/{d}/test.jsonl" for d in DIMS],
        lm_eval=lm_eval_fetched(),
    output:
        train=f"{RESULTS}/data/clean/{{dim}}/train.jsonl",
        val=f"{RESULTS}/data/clean/{{dim}}/val.jsonl",
        report=f"{RESULTS}/data/clean/{{dim}}/decontamination.json",
    log:
        f"{RESULTS}/logs/data/clean/{{dim}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/data/clean/{{dim}}.tsv"
    conda:
        RESM_ENV
    threads: res("default", "threads", 1)
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        data=lambda wc, input: os.path.dirname(input.train),
        root=lambda wc, input: os.path.dirname(os.path.dirname(input.tests[0])),
        benchmarks=pool_benchmarks(),
        options=config_flags(DecontaminateRequest, DATA),
        cache=lambda wc, input: os.path.dirname(os.path.dirname(input.assets[0])),
        out=lambda wc, output: os.path.dirname(output.train),
        code=code("decontaminate"),
        env=lm_eval_env(offline=True),
    shell:
        "{params.env} resm -q data decontaminate --data {params.data:q} --eval-data {params.root:q} "
        "--benchmarks {params.benchmarks:q} {params.options} --cache {params.cache:q} "
        "--out {params.out:q} --force > {log:q} 2>&1"


rule mix_data:
    input:
        data=lambda wc: [
            f"{RESULTS}/data/clean/{d}/train.jsonl" for d in combo_dims(wc.combo)
        ],
        judge=mix_judge()[1],
    output:
        f"{RESULTS}/data/mix/{{strategy}}/{{combo}}/train.jsonl",
    log:
        f"{RESULTS}/logs/mix/{{strategy}}/{{combo}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/mix/{{strategy}}/{{combo}}.tsv"
    conda:
        RESM_ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        out=f"{RESULTS}/data/mix/{{strategy}}/{{combo}}",
        inputs=lambda wc: [
            f"{d}={RESULTS}/data/clean/{d}" for d in combo_dims(wc.combo)
        ],
        strategy=lambda wc: mix_strategy(wc.strategy),
        options=lambda wc: mix_args(wc.strategy, wc.combo),
        code=code("mix"),
    shell:
        "resm -q data mix --strategy {params.strategy:q} --inputs {params.inputs:q} {params.options} "
        "--out {params.out:q} --force > {log:q} 2>&1"
