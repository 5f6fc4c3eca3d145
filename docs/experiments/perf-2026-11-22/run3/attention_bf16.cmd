/work/main/build/oboro bench attention --tokens 1260 --batch 2 --heads 24 --head-dim 64 --precision bf16 --repeats 3 --json
