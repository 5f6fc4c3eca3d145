build-bench/oboro bench attention --tokens 256,1024,4096 --heads 24 --head-dim 64 --batch 1 --backward --compare-torch --json
