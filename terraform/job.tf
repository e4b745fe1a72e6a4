# The tutorial created this job with `az containerapp job create` in a local-exec; the native resource
# sends the same ARM payload, shows up in `plan`, and is removed by `terraform destroy`.
resource "azurerm_container_app_job" "job" {
  name                         = var.job_name
  location                     = azurerm_resource_group.lab.location
  resource_group_name          = azurerm_resource_group.lab.name
  container_app_environment_id = azurerm_container_app_environment.lab.id
  replica_timeout_in_seconds   = var.replica_timeout_in_seconds
  replica_retry_limit          = var.replica_retry_limit
  tags                         = local.tags

  identity {
    type         = "UserAssigned"
    identity_ids = concat([azurerm_user_assigned_identity.job.id], azurerm_user_assigned_identity.scaler[*].id)
  }

  event_trigger_config {
    parallelism              = var.parallelism
    replica_completion_count = var.replica_completion_count

    scale {
      min_executions              = var.min_executions
      max_executions              = var.max_executions
      polling_interval_in_seconds = var.polling_interval_in_seconds

      rules {
        name             = var.scale_rule_name
        custom_rule_type = var.scale_rule_type
        metadata = {
          queueName    = azurerm_servicebus_queue.messages.name
          namespace    = azurerm_servicebus_namespace.lab.name
          messageCount = tostring(var.message_count)
          # Strictly greater-than in KEDA: with 1, a single message starts no execution.
          activationMessageCount = tostring(var.activation_message_count)
        }
        identity_id = local.scaler_uses_identity ? azurerm_user_assigned_identity.scaler[0].id : null

        dynamic "authentication" {
          for_each = local.scaler_uses_identity ? [] : ["connection"]
          content {
            secret_name       = "service-bus-connection-string"
            trigger_parameter = authentication.value
          }
        }
      }
    }
  }

  # Only in connection-string mode: the RootManageSharedAccessKey string has the Manage claim KEDA needs.
  # (The for_each list holds the secret's name, not the connection string: a sensitive value may not
  # decide how many blocks there are.)
  dynamic "secret" {
    for_each = local.scaler_uses_identity ? [] : ["service-bus-connection-string"]
    content {
      name  = secret.value
      value = azurerm_servicebus_namespace.lab.default_primary_connection_string
    }
  }

  registry {
    server   = azurerm_container_registry.lab.login_server
    identity = azurerm_user_assigned_identity.job.id
  }

  template {
    container {
      name   = var.job_name
      image  = local.image
      cpu    = var.cpu
      memory = var.memory

      env {
        name  = var.env_names.servicebus_fqdn
        value = "${azurerm_servicebus_namespace.lab.name}.servicebus.windows.net"
      }
      env {
        name  = var.env_names.managed_identity_client_id
        value = azurerm_user_assigned_identity.job.client_id
      }
      env {
        name  = var.env_names.queue_name
        value = azurerm_servicebus_queue.messages.name
      }
    }
  }

  # The image must exist and the identity must be allowed to pull it and to read the queue before the
  # first execution can start; role assignments are not implied by the references above.
  depends_on = [
    terraform_data.image,
    terraform_data.image_docker,
    azurerm_role_assignment.job_acr_pull,
    azurerm_role_assignment.job_receiver,
    azurerm_role_assignment.scaler_owner,
  ]
}
