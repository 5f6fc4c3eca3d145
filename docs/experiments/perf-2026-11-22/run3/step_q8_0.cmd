/work/main/build/oboro bench step --config oboro-1b --size 416x736 --type q8_0 --compare-torch --twin-dtypes bfloat16 --json --profile --repeats 1 --sgemm-size 0
