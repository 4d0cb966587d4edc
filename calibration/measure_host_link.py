# Host <-> device copy bandwidth and latency for KV-block-sized transfers, pinned host memory.
#
# What vLLM's CPU offloading moves (vllm/v1/kv_offload/worker/cpu_gpu.py,
# SingleDirectionOffloadingHandler.transfer_async): a job of n KV blocks copied by
# ops.swap_blocks, one cudaMemcpyAsync per block and KV tensor, on a side stream; the jobs of one
# direction run one after the other. A block is one GPU page: 16 tokens of one layer's K or V
# (32 KiB for Llama-3.1-8B) or of all layers at once (2 MiB, the cross-layer layout).
#
# Per direction (h2d = a load into HBM, d2h = a store to the host), block sizes 32 KiB to 8 MiB,
# 1 to 1024 blocks:
#   contiguous: the n blocks as one copy;
#   per_block:  n copies of one block each between scattered block slots (swap_blocks' pattern),
#               timed on the GPU alone: a sleep kernel holds the stream while the CPU enqueues, so
#               median_us is the copy engine's; issue_us is the CPU's enqueue time of the batch;
#   duplex:     a load and a store of n 2 MiB blocks at once on two streams (median_us: both done).
# CUDA events, 3 warm-ups, median of 10 (5 when a copy is >= 256 MiB). Fit: calibration/fit_host_link.py.
#
# Sent as one device call (the call's command is limited to 2,000 characters, hence the style):
#   python3 - < calibration/measure_host_link.py     # writes $OUT/h200_host_link.csv
# Measured 2026-12-01 on one H200 SXM (driver 580.159.04, PCIe gen5 x16 per nvidia-smi,
# calibration/data/h200_host_link_nvsmi.txt) -> calibration/data/h200_host_link.csv.
import torch,time,statistics as st,csv,os
M=2**20;P=1024*M;U=torch.uint8
h=torch.empty(P,dtype=U,pin_memory=True);d=torch.empty(P,dtype=U,device='cuda')
h2=torch.empty(P//2,dtype=U,pin_memory=True);d2=torch.empty(P//2,dtype=U,device='cuda')
s=torch.cuda.Stream();s2=torch.cuda.Stream();g=torch.Generator().manual_seed(0)
w=csv.writer(open(os.environ['OUT']+'/h200_host_link.csv','w'))
w.writerow(['dir','mode','block_bytes','n_blocks','median_us','min_us','max_us','issue_us'])
E=lambda:torch.cuda.Event(enable_timing=True)
def T(f,hold,r):
 o=[];q=[]
 for i in range(r+3):
  a,b=E(),E()
  with torch.cuda.stream(s):
   if hold:torch.cuda._sleep(hold)
   a.record();t=time.perf_counter();f();q.append(time.perf_counter()-t);b.record()
  b.synchronize();o.append(a.elapsed_time(b)*1e3)
 return o[3:],st.median(q[3:])*1e6
def R(*k,t,i):
 w.writerow([*k,round(st.median(t),2),round(min(t),2),round(max(t),2),round(i,1)]);print(*k,round(st.median(t),1),flush=True)
for B in[32*1024,128*1024,512*1024,2*M,8*M]:
 S=P//B;hv=h[:S*B].view(S,B);dv=d[:S*B].view(S,B)
 for n in[1,4,16,64,256,1024]:
  if n>S:continue
  r=5 if B*n>=P/4 else 10
  for dr in['h2d','d2h']:
   x,y=(hv,dv)if dr=='h2d'else(dv,hv)
   t,i=T(lambda:y[:n].copy_(x[:n],non_blocking=True),0,r);R(dr,'contiguous',B,n,t=t,i=i)
   xs=[x[j]for j in torch.randperm(S,generator=g)[:n].tolist()];ys=[y[j]for j in torch.randperm(S,generator=g)[:n].tolist()]
   def f():
    for p,q in zip(ys,xs):p.copy_(q,non_blocking=True)
   t,i=T(f,int(2e9*(5e-5+2e-5*n)),r);R(dr,'per_block',B,n,t=t,i=i)
for n in[16,64,256]:
 B=n*2*M;t=[]
 for k in range(13):
  a,b,c=E(),E(),E();torch.cuda.synchronize();a.record();s.wait_event(a);s2.wait_event(a)
  with torch.cuda.stream(s):d[:B].copy_(h[:B],non_blocking=True);b.record()
  with torch.cuda.stream(s2):h2[:B].copy_(d2[:B],non_blocking=True);c.record()
  b.synchronize();c.synchronize()
  if k>2:t.append(max(a.elapsed_time(b),a.elapsed_time(c))*1e3)
 R('both','duplex',2*M,n,t=t,i=0)
