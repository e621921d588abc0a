-- Argo CD health of a cachewarden.io CacheIncident (a one-shot runbook action), read from the
-- conditions and phase the operator writes (cache_operator/incidents/executor_io.py; automatic incidents
-- add Resolved). Conditions are authoritative; the phase tells apart the ways Succeeded can be False.
-- Order (kept identical to the Flux healthCheckExprs in examples/gitops/flux/, checked on every
-- fixture by tests/unit/test_gitops_health.py):
--   1. no status yet, or status.observedGeneration behind metadata.generation  -> Progressing
--   2. Resolved (condition True or phase): the symptom cleared                 -> Healthy
--   3. Succeeded=True or phase Succeeded: the action ran (or its dry run did)  -> Healthy
--   4. Running=True, or phase Pending/Running (waiting for a safety rule)      -> Progressing
--   5. phase Recommended: the diagnosis recommends an action a person must run -> Suspended
--   6. phase Skipped or Failed, or Succeeded=False: the action did not run     -> Degraded
--   7. anything else                                                           -> Progressing
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

local function is_true(type_)
  local c = condition(type_)
  return c ~= nil and c.status == "True"
end

local function summary(fallback)
  if obj.status.message ~= nil and obj.status.message ~= "" then
    return obj.status.message
  end
  local c = condition("Succeeded")
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return fallback
end

local action = "action"
if obj.spec ~= nil and obj.spec.action ~= nil then
  action = obj.spec.action
end

if obj.status == nil or (obj.status.phase == nil and
    (obj.status.conditions == nil or #obj.status.conditions == 0)) then
  hs.status = "Progressing"
  hs.message = "Waiting for the cachewarden operator to pick up the " .. action .. " incident"
  return hs
end

local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end
local observed = obj.status.observedGeneration
if observed ~= nil and generation ~= nil and observed ~= generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local phase = obj.status.phase or ""

if is_true("Resolved") or phase == "Resolved" then
  hs.status = "Healthy"
  hs.message = "Resolved: " .. summary("the symptom cleared")
  return hs
end

if is_true("Succeeded") or phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = summary(action .. " succeeded")
  return hs
end

if is_true("Running") or phase == "Pending" or phase == "Running" then
  hs.status = "Progressing"
  local name = phase
  if name == "" then
    name = "Running"
  end
  hs.message = name .. ": " .. summary(action .. " in progress")
  return hs
end

if phase == "Recommended" then
  hs.status = "Suspended"
  local recommended = obj.status.recommendedAction or action
  hs.message = "Recommended " .. recommended .. ", awaiting a person to run it: " .. summary("see status.diagnosis")
  return hs
end

local succeeded = condition("Succeeded")
if phase == "Skipped" or phase == "Failed" or (succeeded ~= nil and succeeded.status == "False") then
  hs.status = "Degraded"
  local name = phase
  if name == "" then
    name = "Failed"
  end
  local reason = ""
  if succeeded ~= nil and succeeded.reason ~= nil and succeeded.reason ~= name then
    reason = " (" .. succeeded.reason .. ")"
  end
  hs.message = name .. reason .. ": " .. summary(action .. " did not run")
  return hs
end

hs.status = "Progressing"
hs.message = "Phase " .. (phase ~= "" and phase or "unknown") .. ": " .. summary("waiting")
return hs
