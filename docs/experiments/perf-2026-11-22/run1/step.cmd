build-bench/oboro bench step --config oboro-1b --size 416x736 --compare-torch --json --profile --repeats 2
