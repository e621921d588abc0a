-- Argo CD health of a cachewarden.io CachePolicy, read from the kstatus conditions the operator
-- writes (cache_operator/conditions.py). Order (kept identical to the Flux healthCheckExprs in
-- examples/gitops/flux/, tests/unit/test_gitops_health.py checks both on every fixture):
--   1. no conditions yet, or status.observedGeneration behind metadata.generation -> Progressing
--   2. Stalled=True (the spec cannot be acted on, e.g. InvalidSpec)              -> Degraded
--   3. spec.paused                                                                -> Suspended
--   4. Reconciling=True (pods not ready, config pending, apply failed, Redis)     -> Progressing
--   5. Ready=True for this generation                                             -> Healthy
--   6. anything else                                                              -> Progressing
-- The cache's own verdict (Healthy/RedisConnected conditions: hit rate, memory, Redis) is reported
-- in the message but does not make the resource Degraded: a low hit rate is not a failed sync, and
-- cachewarden opens CacheIncidents for it.
local hs = {}

local function condition(type_)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == type_ then
      return c
    end
  end
  return nil
end

local function describe(c)
  local text = c.reason or c.type
  if c.message ~= nil and c.message ~= "" then
    text = text .. ": " .. c.message
  end
  return text
end

local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end

if obj.status == nil or obj.status.conditions == nil or #obj.status.conditions == 0 then
  hs.status = "Progressing"
  hs.message = "Waiting for the cachewarden operator to report status"
  return hs
end

local observed = obj.status.observedGeneration
if observed ~= nil and generation ~= nil and observed ~= generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation) ..
    " (status is for generation " .. tostring(observed) .. ")"
  return hs
end

local stalled = condition("Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = "Stalled: " .. describe(stalled)
  return hs
end

if obj.spec ~= nil and obj.spec.paused == true then
  hs.status = "Suspended"
  hs.message = "Paused (spec.paused): the operator applies and pushes nothing; it still probes the pods"
  return hs
end

local reconciling = condition("Reconciling")
if reconciling ~= nil and reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = "Reconciling: " .. describe(reconciling)
  return hs
end

local ready = condition("Ready")
if ready ~= nil and ready.status == "True" and
    (ready.observedGeneration == nil or generation == nil or ready.observedGeneration == generation) then
  hs.status = "Healthy"
  hs.message = describe(ready)
  local healthy = condition("Healthy")
  if healthy ~= nil and healthy.status == "False" then
    hs.message = hs.message .. "; cache " .. describe(healthy)
  end
  local redis = condition("RedisConnected")
  if redis ~= nil and redis.status == "False" then
    hs.message = hs.message .. "; Redis " .. describe(redis)
  end
  return hs
end

hs.status = "Progressing"
if ready ~= nil then
  hs.message = "Not ready: " .. describe(ready)
else
  hs.message = "Waiting for the Ready condition"
end
return hs
