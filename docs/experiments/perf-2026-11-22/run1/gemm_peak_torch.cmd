/usr/bin/python3 bench/torch_gemm_peak.py --n 2048 --threads 2 --repeats 5
