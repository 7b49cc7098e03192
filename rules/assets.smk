# Downloads run where snakemake runs (the login node of a cluster): compute nodes are often offline.
localrules:
    fetch_assets,


if config["base"]["kind"] == "hub":  # a download; packaged and tiny bases are computed

    localrules:
        prepare_base,


rule fetch_assets:
    output:
        [asset_marker(name) for name in needed_assets()],
    log:
        f"{RESULTS}/logs/assets.log",
    benchmark:
        f"{RESULTS}/benchmarks/assets.tsv"
    conda:
        RESM_ENV
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,
    params:
        names=needed_assets(),
        cache=lambda wc, output: os.path.dirname(os.path.dirname(output[0])),
        code=code("assets"),
    shell:
        "resm -q assets fetch {params.names:q} --cache {params.cache:q} > {log:q} 2>&1"


rule prepare_base:
    input:
        [asset_marker(name) for name in needed_assets()],
    output:
        directory(f"{RESULTS}/base"),
    log:
        f"{RESULTS}/logs/base.log",
    cache: True
    conda:
        RESM_ENV
    threads: res("default", "threads", 1)
    resources:
        mem_mb=4000,
        runtime=30,
        disk_mb=res("default", "disk_mb", 2000),
    params:
        command=base_command(),
        code=code("base"),
    shell:
        "{params.command} --out {output:q} > {log:q} 2>&1"
