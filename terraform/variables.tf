# ---------------------------------------------------------------------------------------------------
# Lab placement. Defaults work for a participant; override with -var or TF_VAR_*.
# ---------------------------------------------------------------------------------------------------

variable "subscription_id" {
  description = "Subscription to deploy into. Null means ARM_SUBSCRIPTION_ID (set by `cargo xtask lab --azure`)."
  type        = string
  default     = null

  validation {
    condition     = var.subscription_id == null || can(regex("^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$", var.subscription_id))
    error_message = "subscription_id must be a subscription GUID; see `az account show --query id -o tsv`."
  }
}

variable "location" {
  description = "Azure region for every resource."
  type        = string
  default     = "westeurope"

  validation {
    condition     = can(regex("^[a-z0-9]+$", var.location))
    error_message = "location must be a region name such as westeurope (lowercase, no spaces); see `az account list-locations -o table`."
  }
}

variable "name_prefix" {
  description = "Short word in every resource name; a random suffix keeps global names unique."
  type        = string
  default     = "lab"

  validation {
    condition     = can(regex("^[a-z][a-z0-9]{1,9}$", var.name_prefix))
    error_message = "name_prefix must be 2 to 10 lowercase letters or digits, starting with a letter (it ends up in the registry name, which allows nothing else)."
  }
}

variable "scaler_auth" {
  description = "How the KEDA scaler reads the queue length: `managed_identity` (a user-assigned identity with Service Bus Data Owner on the queue) or `connection_string` (the namespace's RootManageSharedAccessKey as a job secret, as in the tutorial)."
  type        = string
  default     = "managed_identity"

  validation {
    condition     = contains(["managed_identity", "connection_string"], var.scaler_auth)
    error_message = "scaler_auth must be \"managed_identity\" or \"connection_string\"."
  }
}

variable "image_builder" {
  description = "How the worker image gets into the registry: `acr` (az acr build, in Azure, no local Docker) or `docker` (local docker build + push, for subscriptions without ACR Tasks such as free credit)."
  type        = string
  default     = "acr"

  validation {
    condition     = contains(["acr", "docker"], var.image_builder)
    error_message = "image_builder must be \"acr\" or \"docker\"."
  }
}

variable "operator_object_id" {
  description = "Entra object id that gets Service Bus Data Sender on the queue so `cargo xtask lab send` works with the az login token. Null means whoever runs Terraform; empty string grants nobody."
  type        = string
  default     = null
}

variable "queue_lock_duration" {
  description = "Peek-lock duration of the queue (ISO 8601). The tutorial uses the maximum, PT5M."
  type        = string
  default     = "PT5M"

  validation {
    condition     = can(regex("^PT([1-4]M|5M|[0-9]+S)$", var.queue_lock_duration))
    error_message = "queue_lock_duration must be an ISO 8601 duration of at most PT5M, e.g. PT1M or PT30S."
  }
}

variable "queue_max_delivery_count" {
  description = "Deliveries before a message is dead-lettered. The tutorial uses 1: a replica that dies after receiving dead-letters the message."
  type        = number
  default     = 1

  validation {
    condition     = var.queue_max_delivery_count >= 1 && var.queue_max_delivery_count <= 2000 && floor(var.queue_max_delivery_count) == var.queue_max_delivery_count
    error_message = "queue_max_delivery_count must be a whole number from 1 to 2000."
  }
}

variable "tags" {
  description = "Tags on every resource that takes them."
  type        = map(string)
  default     = {}
}

# ---------------------------------------------------------------------------------------------------
# The job's settings. Their values live in job.auto.tfvars.json, which the local lab reads too
# (xtask/src/lab/settings.rs applies the same rules). Keep the two in step.
# ---------------------------------------------------------------------------------------------------

variable "job_name" {
  description = "Container Apps job name (also the container and image name)."
  type        = string

  validation {
    # The azurerm provider's ContainerAppJobName rule (internal/services/containerapps/validate).
    condition     = can(regex("^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$", var.job_name)) && !strcontains(var.job_name, "--")
    error_message = "job_name must be 1 to 32 lowercase letters, digits or '-', starting and ending with a letter or digit, without '--'."
  }
}

variable "queue_name" {
  description = "Service Bus queue that triggers the job."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9]([A-Za-z0-9._/-]{0,258}[A-Za-z0-9])?$", var.queue_name))
    error_message = "queue_name must be 1 to 260 letters, digits, '.', '-', '_' or '/', starting and ending with a letter or digit."
  }
}

variable "replica_timeout_in_seconds" {
  description = "Seconds a replica may run (tutorial: 86400)."
  type        = number

  validation {
    condition     = var.replica_timeout_in_seconds >= 1
    error_message = "replica_timeout_in_seconds must be at least 1 (the tutorial uses 86400)."
  }
}

variable "replica_retry_limit" {
  description = "Retries of a failed replica (tutorial: 1)."
  type        = number

  validation {
    condition     = var.replica_retry_limit >= 0
    error_message = "replica_retry_limit must be 0 or more (the tutorial uses 1)."
  }
}

variable "replica_completion_count" {
  description = "Replicas that must succeed for an execution to succeed (tutorial: 1)."
  type        = number

  validation {
    condition     = var.replica_completion_count >= 1
    error_message = "replica_completion_count must be at least 1 (the tutorial uses 1)."
  }
}

variable "parallelism" {
  description = "Replicas per execution (tutorial: 1)."
  type        = number

  validation {
    condition     = var.parallelism >= 1 && var.parallelism >= var.replica_completion_count
    error_message = "parallelism must be at least 1 and at least replica_completion_count, or an execution can never succeed (the tutorial uses 1 and 1)."
  }
}

variable "cpu" {
  description = "vCPU per replica (tutorial: 0.25)."
  type        = number

  validation {
    condition     = var.cpu >= 0.25 && var.cpu <= 4 && floor(var.cpu * 4) == var.cpu * 4
    error_message = "cpu must be a multiple of 0.25 between 0.25 and 4 (the tutorial uses 0.25)."
  }
}

variable "memory" {
  description = "Memory per replica, twice the cpu in Gi on the Consumption profile (tutorial: 0.5Gi)."
  type        = string

  validation {
    condition     = can(regex("^[0-9.]+Gi$", var.memory)) && try(tonumber(trimsuffix(var.memory, "Gi")) == var.cpu * 2, false)
    error_message = "memory must be twice the cpu in Gi, e.g. cpu 0.25 needs \"0.5Gi\"."
  }
}

variable "min_executions" {
  description = "Executions kept running with an empty queue (tutorial: 0)."
  type        = number

  validation {
    condition     = var.min_executions >= 0
    error_message = "min_executions must be 0 or more (the tutorial uses 0)."
  }
}

variable "max_executions" {
  description = "Executions started at most per polling interval (tutorial: 1)."
  type        = number

  validation {
    condition     = var.max_executions >= 1 && var.max_executions >= var.min_executions
    error_message = "max_executions must be at least 1 and at least min_executions (the tutorial uses 0 and 1)."
  }
}

variable "polling_interval_in_seconds" {
  description = "How often the scaler counts the queue (Container Apps default: 30)."
  type        = number

  validation {
    condition     = var.polling_interval_in_seconds >= 1
    error_message = "polling_interval_in_seconds must be at least 1 (Container Apps defaults to 30)."
  }
}

variable "scale_rule_name" {
  description = "Name of the KEDA scale rule."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$", var.scale_rule_name))
    error_message = "scale_rule_name must be lowercase letters, digits, '-' or '.', starting and ending with a letter or digit."
  }
}

variable "scale_rule_type" {
  description = "KEDA scaler type."
  type        = string

  validation {
    condition     = var.scale_rule_type == "azure-servicebus"
    error_message = "scale_rule_type must be \"azure-servicebus\": this lab is about the Service Bus scaler."
  }
}

variable "message_count" {
  description = "KEDA messageCount: target active messages per execution (tutorial: 1, one execution per message)."
  type        = number

  validation {
    condition     = var.message_count >= 1 && floor(var.message_count) == var.message_count
    error_message = "message_count must be a whole number of at least 1; 1 starts one execution per message."
  }
}

variable "activation_message_count" {
  description = "KEDA activationMessageCount: no execution starts until the queue holds MORE active messages than this (KEDA default and tutorial: 0; 1 means one message starts nothing)."
  type        = number

  validation {
    condition     = var.activation_message_count >= 0 && floor(var.activation_message_count) == var.activation_message_count
    error_message = "activation_message_count must be a whole number of 0 or more; 0 (KEDA's default) starts an execution for the first message, 1 waits for a second."
  }
}

variable "env_names" {
  description = "Names of the environment variables the worker reads."
  type = object({
    servicebus_fqdn            = string
    managed_identity_client_id = string
    queue_name                 = string
  })

  validation {
    condition     = alltrue([for name in values(var.env_names) : can(regex("^[A-Z][A-Z0-9_]*$", name))])
    error_message = "env_names values must be uppercase letters, digits and '_', starting with a letter."
  }
}
