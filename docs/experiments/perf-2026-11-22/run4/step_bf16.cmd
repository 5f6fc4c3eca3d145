/tmp/ci/build/oboro bench step --config oboro-1b --size 416x736 --type bf16 --compare-torch --json --profile --repeats 2
