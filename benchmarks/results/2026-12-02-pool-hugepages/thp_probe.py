"""channels_last max pooling forward above the cache: cnnext and torch GB/s, 3 repetitions.
Run with THP_MEM_ALLOC_ENABLE=0 and =1 (see NOTE.md); prints AnonHugePages to show which."""
import torch, cnnext.functional as CF, torch.nn.functional as F, time
torch.set_num_threads(2)
def bench(f, n=30):
    with torch.no_grad():
        for _ in range(5): f()
        ts=[]
        for _ in range(n):
            t=time.perf_counter(); f(); ts.append(time.perf_counter()-t)
    ts.sort(); return ts[len(ts)//2]
for shape, k, s in [((8,64,224,224),2,2), ((8,64,112,112),3,2)]:
    x = torch.randn(shape).contiguous(memory_format=torch.channels_last)
    o = F.max_pool2d(x, k, s)
    nbytes = (x.numel()+o.numel())*4
    r=[]
    for rep in range(3):
        tc = bench(lambda: CF.max_pool2d(x, k, s)); tt = bench(lambda: F.max_pool2d(x, k, s))
        r.append('c %.0f t %.0f' % (nbytes/tc/1e9, nbytes/tt/1e9))
    print(shape, k, 'GB/s:', ' | '.join(r))
print([l for l in open('/proc/self/smaps_rollup') if 'AnonHuge' in l])
